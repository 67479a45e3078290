//! Where a visit came from: the referrer reduced to host and path and named as a source
//! (well-known names, else the registrable domain), campaign parameters from the page URL, and
//! referrer spam.

use std::collections::HashSet;
use std::sync::LazyLock;

use percent_encoding::percent_decode_str;
use url::Url;

/// The referrer as stored: `host/path`, no query or fragment, and its source name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Referrer {
    pub referrer: String,
    pub source: String,
}

/// Campaign parameters. `ref` and `source` stand in for a missing `utm_source`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Campaign {
    pub source: String,
    pub medium: String,
    pub campaign: String,
    pub term: String,
    pub content: String,
}

/// Longest campaign value kept; longer ones are cut.
const MAX_CAMPAIGN_CHARS: usize = 256;

impl Campaign {
    pub fn from_url(url: &Url) -> Self {
        let mut c = Campaign::default();
        let mut fallback_source = String::new();
        for (key, value) in url.query_pairs() {
            let value: String = value.trim().chars().take(MAX_CAMPAIGN_CHARS).collect();
            match key.as_ref() {
                "utm_source" => c.source = value,
                "utm_medium" => c.medium = value,
                "utm_campaign" => c.campaign = value,
                "utm_term" => c.term = value,
                "utm_content" => c.content = value,
                "ref" | "source" if fallback_source.is_empty() => fallback_source = value,
                _ => {}
            }
        }
        if c.source.is_empty() {
            c.source = fallback_source;
        }
        c
    }
}

/// The referrer was a known spam domain: the event is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferrerSpam;

/// Classifies a raw referrer for a page on `page_host` (already normalised). Self-referrals
/// and non-web referrers (`android-app://…`, garbage) give `None`.
pub fn classify(raw: Option<&str>, page_host: &str) -> Result<Option<Referrer>, ReferrerSpam> {
    let Some(url) = raw.and_then(|r| Url::parse(r).ok()) else {
        return Ok(None);
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Ok(None);
    }
    let host = normalize_host(url.host_str().unwrap_or_default());
    if host.is_empty() || host == page_host {
        return Ok(None);
    }
    if is_spam(&host) {
        return Err(ReferrerSpam);
    }
    let path = percent_decode_str(url.path()).decode_utf8_lossy();
    let referrer = if path == "/" {
        host.clone()
    } else {
        format!("{host}{path}")
    };
    Ok(Some(Referrer {
        source: source_name(&host),
        referrer,
    }))
}

pub use glimpse_core::site::normalize_host;

/// A well-known name for the host, else its registrable domain (`blog.example.co.uk` →
/// `example.co.uk`), else the host itself (IP addresses, `localhost`).
pub fn source_name(host: &str) -> String {
    if let Some(name) = KNOWN_HOSTS
        .iter()
        .find(|(h, _)| *h == host)
        .map(|(_, n)| *n)
    {
        return name.to_string();
    }
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return host.to_string();
    }
    let Some(domain) = psl::domain_str(host) else {
        return host.to_string();
    };
    let label = domain.split('.').next().unwrap_or(domain);
    match KNOWN_LABELS.iter().find(|(l, _)| *l == label) {
        Some((_, name)) => name.to_string(),
        None => domain.to_string(),
    }
}

/// Hosts with a name of their own, checked before the registrable domain.
const KNOWN_HOSTS: &[(&str, &str)] = &[
    ("t.co", "X (Twitter)"),
    ("x.com", "X (Twitter)"),
    ("news.ycombinator.com", "Hacker News"),
    ("lnkd.in", "LinkedIn"),
    ("search.brave.com", "Brave Search"),
    ("youtu.be", "YouTube"),
    ("fb.me", "Facebook"),
    ("chat.openai.com", "ChatGPT"),
    ("chatgpt.com", "ChatGPT"),
    ("perplexity.ai", "Perplexity"),
    ("mail.google.com", "Gmail"),
    ("outlook.live.com", "Outlook"),
    ("web.whatsapp.com", "WhatsApp"),
    ("wa.me", "WhatsApp"),
    ("t.me", "Telegram"),
    ("duck.com", "DuckDuckGo"),
    ("search.yahoo.com", "Yahoo!"),
    ("stackoverflow.com", "Stack Overflow"),
];

/// Registrable-domain labels (the part before the public suffix: `google` of `google.co.uk`)
/// that name a source in any country domain.
const KNOWN_LABELS: &[(&str, &str)] = &[
    ("google", "Google"),
    ("bing", "Bing"),
    ("duckduckgo", "DuckDuckGo"),
    ("yahoo", "Yahoo!"),
    ("yandex", "Yandex"),
    ("baidu", "Baidu"),
    ("ecosia", "Ecosia"),
    ("startpage", "Startpage"),
    ("qwant", "Qwant"),
    ("naver", "Naver"),
    ("facebook", "Facebook"),
    ("instagram", "Instagram"),
    ("twitter", "X (Twitter)"),
    ("linkedin", "LinkedIn"),
    ("reddit", "Reddit"),
    ("github", "GitHub"),
    ("gitlab", "GitLab"),
    ("youtube", "YouTube"),
    ("pinterest", "Pinterest"),
    ("tiktok", "TikTok"),
    ("wikipedia", "Wikipedia"),
    ("producthunt", "Product Hunt"),
    ("medium", "Medium"),
    ("substack", "Substack"),
    ("mastodon", "Mastodon"),
    ("bsky", "Bluesky"),
    ("threads", "Threads"),
    ("discord", "Discord"),
    ("slack", "Slack"),
    ("telegram", "Telegram"),
    ("whatsapp", "WhatsApp"),
    ("vk", "VKontakte"),
    ("quora", "Quora"),
    ("stackexchange", "Stack Exchange"),
];

/// Matomo's community list of referrer spammers (public domain), compiled in.
static SPAM_HOSTS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    include_str!("lists/referrer_spam.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_ascii_lowercase)
        .collect()
});

/// Whether the host, or a domain it belongs to, is a listed spammer.
pub fn is_spam(host: &str) -> bool {
    let mut rest = host;
    loop {
        if SPAM_HOSTS.contains(rest) {
            return true;
        }
        match rest.split_once('.') {
            Some((_, parent)) if parent.contains('.') => rest = parent,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(raw: &str) -> String {
        classify(Some(raw), "example.com").unwrap().unwrap().source
    }

    #[test]
    fn well_known_sources_are_named() {
        assert_eq!(source("https://www.google.com/search?q=x"), "Google");
        assert_eq!(source("https://www.google.co.uk/"), "Google");
        assert_eq!(source("https://www.bing.com/search?q=glimpse"), "Bing");
        assert_eq!(source("https://duckduckgo.com/"), "DuckDuckGo");
        assert_eq!(source("https://l.facebook.com/l.php?u=x"), "Facebook");
        assert_eq!(source("https://m.facebook.com/"), "Facebook");
        assert_eq!(source("https://t.co/abc"), "X (Twitter)");
        assert_eq!(source("https://twitter.com/someone"), "X (Twitter)");
        assert_eq!(source("https://www.linkedin.com/feed/"), "LinkedIn");
        assert_eq!(source("https://old.reddit.com/r/rust/"), "Reddit");
        assert_eq!(source("https://github.com/org/repo"), "GitHub");
        assert_eq!(
            source("https://news.ycombinator.com/item?id=1"),
            "Hacker News"
        );
        assert_eq!(source("https://en.wikipedia.org/wiki/X"), "Wikipedia");
    }

    #[test]
    fn others_are_their_registrable_domain() {
        assert_eq!(source("https://blog.someone.co.uk/post"), "someone.co.uk");
        assert_eq!(source("https://a.b.example.org/"), "example.org");
        assert_eq!(source("http://192.0.2.1/x"), "192.0.2.1");
        assert_eq!(source("http://[2001:db8::1]/x"), "[2001:db8::1]");
        assert_eq!(source("http://localhost:3000/"), "localhost");
    }

    #[test]
    fn referrer_is_host_and_path_only() {
        let r = classify(
            Some("https://www.Google.com/url?q=secret&sa=t#frag"),
            "example.com",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.referrer, "google.com/url");
        let r = classify(Some("https://news.ycombinator.com/"), "example.com")
            .unwrap()
            .unwrap();
        assert_eq!(r.referrer, "news.ycombinator.com");
    }

    #[test]
    fn self_referrals_and_non_web_referrers_are_none() {
        assert_eq!(
            classify(Some("https://www.example.com/a"), "example.com"),
            Ok(None)
        );
        assert_eq!(
            classify(Some("android-app://com.slack"), "example.com"),
            Ok(None)
        );
        assert_eq!(classify(Some("not a url"), "example.com"), Ok(None));
        assert_eq!(classify(None, "example.com"), Ok(None));
    }

    #[test]
    fn spam_referrers_are_refused_with_subdomains() {
        assert!(SPAM_HOSTS.len() > 1000, "{} spam hosts", SPAM_HOSTS.len());
        let listed = SPAM_HOSTS
            .iter()
            .find(|h| h.matches('.').count() == 1)
            .unwrap();
        assert_eq!(
            classify(Some(&format!("https://{listed}/x")), "example.com"),
            Err(ReferrerSpam)
        );
        assert_eq!(
            classify(Some(&format!("http://sub.{listed}/")), "example.com"),
            Err(ReferrerSpam)
        );
        assert!(!is_spam("google.com"));
        assert!(!is_spam("com"));
        // The list has an upper-case entry and one with a trailing space.
        assert!(is_spam("qiwi.xyz"));
        assert!(is_spam("prizesk.com"));
    }

    #[test]
    fn campaigns() {
        let url = Url::parse(
            "https://e.com/?utm_source=news&utm_medium=email&utm_campaign=launch&utm_term=t&utm_content=c&ref=x",
        )
        .unwrap();
        assert_eq!(
            Campaign::from_url(&url),
            Campaign {
                source: "news".into(),
                medium: "email".into(),
                campaign: "launch".into(),
                term: "t".into(),
                content: "c".into(),
            }
        );
        let url = Url::parse("https://e.com/?ref=producthunt&source=other").unwrap();
        assert_eq!(Campaign::from_url(&url).source, "producthunt");
        let long = format!("https://e.com/?utm_source={}", "a".repeat(1000));
        assert_eq!(
            Campaign::from_url(&Url::parse(&long).unwrap()).source.len(),
            256
        );
    }
}
